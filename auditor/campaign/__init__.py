"""Campaigns: the probe and the audit across many machines and images, aggregated."""
