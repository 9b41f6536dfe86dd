"""KCIDB: wrtci's record as KernelCI's objects (export, the section of the config).

Shared by the results service's forwarder, the API's dashboard endpoints and
the ``wrtci kcidb`` command.
"""
