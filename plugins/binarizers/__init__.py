"""Binarizers: anomaly maps → masks and connected regions."""
