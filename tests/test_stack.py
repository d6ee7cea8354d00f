"""The stack's settings in process: the address it advertises, the Host headers its MLflow server
admits, stack.json from before `advertise` existed. The servers themselves: test_team.py and
test_hosts.py."""

from __future__ import annotations

import json

import pytest

from mnist_stack import mlflow_server
from mnist_stack.settings import Settings, StackError, advertised_address, exports, load_settings


def settings(host: str, advertise: str = "") -> Settings:
    return Settings(host=host, pg_port=5433, mlflow_port=5000, password="pw", advertise=advertise)


def test_a_loopback_stack_advertises_loopback():
    assert advertised_address("127.0.0.1", None) == ""
    assert settings("127.0.0.1").tracking_uri() == "http://127.0.0.1:5000"


def test_a_given_address_wins_and_a_specific_host_advertises_itself():
    assert advertised_address("0.0.0.0", "mlflow.lab.example") == "mlflow.lab.example"
    assert advertised_address("10.1.2.3", None) == "10.1.2.3"
    team = settings("0.0.0.0", "10.1.2.3")
    assert exports(team) == (
        "export MLFLOW_TRACKING_URI=http://10.1.2.3:5000\nexport OPTUNA_STORAGE=postgresql://mnist:pw@10.1.2.3:5433/optuna\n"
    )


def test_every_interface_advertises_the_only_network_address_or_asks_for_one(monkeypatch):
    import socket
    from types import SimpleNamespace

    import psutil

    def addrs(*ips):
        return {f"eth{i}": [SimpleNamespace(family=socket.AF_INET, address=ip)] for i, ip in enumerate(ips)}

    up = {name: SimpleNamespace(isup=True) for name in ("lo", "eth0", "eth1")}
    monkeypatch.setattr(psutil, "net_if_stats", lambda: up)
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {**addrs("10.9.0.4"), "lo": addrs("127.0.0.1")["eth0"]})
    assert advertised_address("0.0.0.0", None) == "10.9.0.4"
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: addrs("10.9.0.4", "192.168.1.7"))
    with pytest.raises(StackError, match=r"several addresses \(10\.9\.0\.4, 192\.168\.1\.7\); pass --advertise ADDR"):
        advertised_address("0.0.0.0", None)


def test_the_server_admits_its_advertised_address_and_loopback_only():
    options = mlflow_server.security_options(settings("0.0.0.0", "10.1.2.3"))
    hosts = options[options.index("--allowed-hosts") + 1].split(",")
    assert "10.1.2.3:5000" in hosts and "10.1.2.3" in hosts and "localhost:5000" in hosts
    assert not any("*" in h for h in hosts), "no wildcard: an unknown Host header is refused"
    origins = options[options.index("--cors-allowed-origins") + 1].split(",")
    assert "http://10.1.2.3:5000" in origins and "http://127.0.0.1:5000" in origins
    loopback = mlflow_server.security_options(settings("127.0.0.1"))
    assert loopback[1] == "localhost:5000,127.0.0.1:5000,[::1]:5000,localhost,127.0.0.1,[::1]"


def test_stack_json_from_before_advertise_still_loads(tmp_path):
    (tmp_path / "stack.json").write_text(
        json.dumps({"host": "127.0.0.1", "pg_port": 5433, "mlflow_port": 5000, "password": "pw"})
    )
    assert load_settings(tmp_path) == settings("127.0.0.1")
