"""The fieldtrack gateway: MQTT in, validated, stored exactly once, forwarded."""
