"""The lab: real systemd hosts on one Linux machine (systemd-nspawn containers, each in a
network namespace of its own on a bridge), so Ansible, ufw and testinfra meet real hosts.

    python -m cloudlab up [--hosts N] | down | status | ssh N [cmd...]
"""
