"""Channel Access confined to loopback: the environment of a local IOC and its clients in tests and benchmarks."""

from __future__ import annotations


def loopback_ca_env(port: int) -> dict[str, str]:
    """EPICS variables for an IOC serving on ``127.0.0.1:port`` and for clients that must find only it.

    Set them before pyepics (or softioc) is imported in a process: libca reads them once at start-up."""
    return {
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}",
        "EPICS_CA_CONN_TMO": "2",  # a lost IOC shows within seconds (IOC-restart tests)
        "EPICS_CA_MAX_SEARCH_PERIOD": "60",
        "EPICS_CA_MAX_ARRAY_BYTES": "100000",
    }
