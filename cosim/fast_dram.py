"""cocotb helpers for ``AxiMemory``'s backdoor: load and read the DRAM image, one word per clock.

For a Verilated design that exposes the memory's ``bd_*`` ports at its top
(``SimTop``, or any bench that passes them through), with clock ``dut.clk``.
Use them while no AXI traffic touches the same words (the NPU idle): the
backdoor write port and the AXI write port are independent. Each call starts
with a rising edge, so it may be called from any phase, and returns right
after a rising edge with ``bd_we`` low.
"""

from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["load_image", "read_image", "set_slverr"]


def _check(addr, beat_bytes):
    if beat_bytes <= 0 or beat_bytes & (beat_bytes - 1):
        raise ValueError(f"beat_bytes must be a power of two, not {beat_bytes}")
    if addr < 0 or addr % beat_bytes:
        raise ValueError(f"addr must be a non-negative multiple of beat_bytes ({beat_bytes}), "
                         f"not {addr:#x}")


async def load_image(dut, image: bytes, beat_bytes: int, *, addr: int = 0,
                     assume_zero: bool = False) -> None:
    """Write ``image`` into the DRAM at byte address ``addr`` (beat-aligned), one word per clock.

    A last partial word is merged with the word in memory (read first).
    ``assume_zero``: the memory is known to be all zeros (fresh simulation), so
    all-zero words are skipped (an output buffer then costs nothing).
    """
    _check(addr, beat_bytes)
    image = bytes(image)
    nfull, tail = divmod(len(image), beat_bytes)
    words = [int.from_bytes(image[i * beat_bytes:(i + 1) * beat_bytes], "little")
             for i in range(nfull)]
    if tail:
        old = await read_image(dut, addr + nfull * beat_bytes, beat_bytes, beat_bytes)
        words.append(int.from_bytes(image[nfull * beat_bytes:] + old[tail:], "little"))
    base = addr // beat_bytes
    clk = dut.clk
    await RisingEdge(clk)
    for i, w in enumerate(words):
        if assume_zero and w == 0:
            continue
        dut.bd_addr.value = base + i
        dut.bd_wdata.value = w
        dut.bd_we.value = 1
        await RisingEdge(clk)
        dut.bd_we.value = 0


async def read_image(dut, addr: int, nbytes: int, beat_bytes: int) -> bytes:
    """Read ``nbytes`` from byte address ``addr`` (beat-aligned): the address of word k+1 is
    set while word k is read out, so it costs one clock per word plus one."""
    _check(addr, beat_bytes)
    n = -(-nbytes // beat_bytes)
    base = addr // beat_bytes
    clk = dut.clk
    out = bytearray()
    await RisingEdge(clk)
    dut.bd_we.value = 0
    if n == 0:
        return b""
    dut.bd_addr.value = base
    for i in range(n):
        await RisingEdge(clk)          # this edge latches word base + i
        if i + 1 < n:
            dut.bd_addr.value = base + i + 1
        await ReadOnly()
        out += int(dut.bd_rdata.value).to_bytes(beat_bytes, "little")
    await RisingEdge(clk)
    return bytes(out[:nbytes])


async def set_slverr(dut, base: int, size: int) -> None:
    """Make the byte addresses ``[base, base + size)`` answer SLVERR (size 0: none)."""
    clk = dut.clk
    await RisingEdge(clk)
    dut.bd_slverr_base.value = base
    dut.bd_slverr_size.value = size
    dut.bd_slverr_we.value = 1
    await RisingEdge(clk)
    dut.bd_slverr_we.value = 0
