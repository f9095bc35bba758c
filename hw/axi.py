"""AXI4 and AXI4-Lite bus signatures.

Members are flat and named exactly as the AXI specification's signals, in lower
case, from the initiator's (master's) side: a master holds
``Out(AXI4Signature(...))`` and a slave holds ``In(AXI4Signature(...))``. A top
level port named ``m_axi`` is then emitted by Amaranth as ``m_axi__awaddr`` and
so on, which cocotbext-axi binds with
``AxiBus.from_prefix(dut, "m_axi", bus_separator="__")``; every signal that
cocotbext-axi requires or knows as optional (except ``*region`` and ``*user``)
is present.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4Signature", "AXI4LiteSignature", "AXILiteSignature",
           "BURST_INCR", "RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR", "RESP_DECERR"]

#: ``AxBURST`` encoding of an incrementing burst.
BURST_INCR = 0b01
#: ``xRESP`` encodings.
RESP_OKAY = 0b00
RESP_EXOKAY = 0b01
RESP_SLVERR = 0b10
RESP_DECERR = 0b11


def _check_width(name, value, *, minimum=1, maximum=None):
    if not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        limit = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise TypeError(f"{name} must be an integer {limit}, not {value!r}")


class AXI4Signature(wiring.Signature):
    """Build the signature of a full AXI4 interface, seen from the master.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` and ``araddr`` in bits.
    data_width : int
        Width of ``wdata`` and ``rdata`` in bits; a power of two, at least 8.
    id_width : int
        Width of the transaction IDs ``awid``, ``bid``, ``arid``, ``rid``.
    """

    def __init__(self, *, addr_width, data_width, id_width):
        _check_width("addr_width", addr_width, maximum=64)
        _check_width("data_width", data_width, minimum=8, maximum=1024)
        if data_width & (data_width - 1):
            raise TypeError(f"data_width must be a power of two, not {data_width}")
        _check_width("id_width", id_width, maximum=32)
        self._addr_width = addr_width
        self._data_width = data_width
        self._id_width = id_width
        super().__init__({
            # Write address channel.
            "awid": Out(id_width),
            "awaddr": Out(addr_width),
            "awlen": Out(8),
            "awsize": Out(3),
            "awburst": Out(2),
            "awlock": Out(1),
            "awcache": Out(4),
            "awprot": Out(3),
            "awqos": Out(4),
            "awvalid": Out(1),
            "awready": In(1),
            # Write data channel.
            "wdata": Out(data_width),
            "wstrb": Out(data_width // 8),
            "wlast": Out(1),
            "wvalid": Out(1),
            "wready": In(1),
            # Write response channel.
            "bid": In(id_width),
            "bresp": In(2),
            "bvalid": In(1),
            "bready": Out(1),
            # Read address channel.
            "arid": Out(id_width),
            "araddr": Out(addr_width),
            "arlen": Out(8),
            "arsize": Out(3),
            "arburst": Out(2),
            "arlock": Out(1),
            "arcache": Out(4),
            "arprot": Out(3),
            "arqos": Out(4),
            "arvalid": Out(1),
            "arready": In(1),
            # Read data channel.
            "rid": In(id_width),
            "rdata": In(data_width),
            "rresp": In(2),
            "rlast": In(1),
            "rvalid": In(1),
            "rready": Out(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    @property
    def id_width(self):
        return self._id_width

    def __eq__(self, other):
        return (type(other) is type(self) and self.addr_width == other.addr_width
                and self.data_width == other.data_width and self.id_width == other.id_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width, self.id_width))

    def __repr__(self):
        return (f"AXI4Signature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width})")


class AXI4LiteSignature(wiring.Signature):
    """Build the signature of an AXI4-Lite interface, seen from the master.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` and ``araddr`` in bits.
    data_width : int
        Width of ``wdata`` and ``rdata``: 32 or 64 bits.
    """

    def __init__(self, *, addr_width, data_width=32):
        _check_width("addr_width", addr_width, maximum=64)
        if data_width not in (32, 64):
            raise TypeError(f"data_width must be 32 or 64, not {data_width!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width),
            "awprot": Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata": Out(data_width),
            "wstrb": Out(data_width // 8),
            "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2),
            "bvalid": In(1),
            "bready": Out(1),
            "araddr": Out(addr_width),
            "arprot": Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata": In(data_width),
            "rresp": In(2),
            "rvalid": In(1),
            "rready": Out(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    def __eq__(self, other):
        return (type(other) is type(self) and self.addr_width == other.addr_width
                and self.data_width == other.data_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width))

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


#: The name used in ``docs/architecture.md``; the same class.
AXILiteSignature = AXI4LiteSignature
