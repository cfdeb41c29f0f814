"""Cluster job-submission toolkit for PyTorch training (login-node side; never imports torch)."""
