"""The test-side SRAM model: row-addressed, synchronous, one read and one write port.

One ``step`` per cycle, before the tick: it drives the read port's data (what the
previous enabled read fetched; it holds while ``en`` is low), then samples the write
port (logged in ``writes``, and applied to ``rows`` when the model holds rows) and the
read port (a read of the row written in the same cycle sees the new data).
"""

__all__ = ["Sram"]


class Sram:
    """``rows``: a list of row values, or None for a write-only model that just logs."""

    def __init__(self, rows=None):
        self.rows = rows
        self.data = 0
        self.writes = []       # (addr, data) of every enabled write, in order

    @classmethod
    def random(cls, n_rows, row_bytes, rng):
        """``n_rows`` rows of random ``row_bytes``-byte values drawn from ``rng`` (a random.Random)."""
        return cls([rng.randrange(1 << (8 * row_bytes)) for _ in range(n_rows)])

    def step(self, ctx, *, rd=None, wr=None):
        if rd is not None:
            ctx.set(rd.data, self.data)
        if wr is not None and ctx.get(wr.en):
            addr, data = ctx.get(wr.addr), ctx.get(wr.data)
            self.writes.append((addr, data))
            if self.rows is not None:
                self.rows[addr] = data
        if rd is not None and ctx.get(rd.en):
            self.data = self.rows[ctx.get(rd.addr)]
