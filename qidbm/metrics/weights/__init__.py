"""Shipped weights of the class-coverage classifiers (see qidbm.metrics.classifier)."""
