"""Test support: protocol-level fakes of the systems the services talk to (see kube_api.py)."""
