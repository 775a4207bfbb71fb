"""Model adapters to the one Classifier protocol, and query accounting."""
