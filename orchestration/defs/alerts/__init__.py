"""The billing alerts feed: fct_billing_alerts exported to S3, each alert once."""
