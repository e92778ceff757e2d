"""Drills: scenario files, fault injection, load, RTO/RPO measurement and reports."""
