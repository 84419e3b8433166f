"""The ``gateway`` command: run the gateway with its sinks from a TOML file.

May import: gateway, and simulate for the optional sample fleet.
"""
