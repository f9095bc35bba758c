"""Test-side models shared by the test files: AXI4 slave memory, AXI4-Lite host, vector-unit reference."""
