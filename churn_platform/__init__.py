"""churn_platform: ML CI/CD for a customer-churn model as a Dagster asset graph."""

__version__ = "0.1.0"
