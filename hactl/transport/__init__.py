"""How hactl talks to hosts: the Transport protocol (base), asyncssh (ssh), a fake for tests."""
