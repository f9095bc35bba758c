"""Shared pytest setup: the markers live here, next to the tests that use them."""


def pytest_configure(config):
    config.addinivalue_line("markers", "rtl: runs the Verilated RTL under cocotb (slower)")
    config.addinivalue_line("markers", "install: installs the wheel into a fresh venv (about 40 s)")
