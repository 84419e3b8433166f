"""The fieldtrack command line and the libraries behind it."""
