"""Data sets in the MURA layout: study discovery and the statistics the MURA paper reports.

Used by batch scoring (scoring/) and training (training/); the service does not need it.
"""
