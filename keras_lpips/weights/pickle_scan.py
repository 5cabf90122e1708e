"""The scan of a pickle's opcodes that `safe_pickle` runs before unpickling a weight file.

It reads the opcodes without building any object and refuses what no weight file needs but a
hostile one uses to make a few bytes cost gigabytes or hours: memo indices far past the opcodes
read (the unpickler sizes its memo by the largest index), lengths past the end of the pickle,
huge integers, sets, and dict keys other than strings and integers (memo references let a tuple
key of a few KB hold 10**12 items, which hashing it or naming an array after it walks).
"""

import pickletools

from keras_lpips.errors import WeightsError

# What `_scan` allows a pickle. A torch state dict takes about 30 opcodes a tensor and a pickled
# numpy array about 15, so a million opcodes is some 30,000 arrays: far more than any supported
# net has, while the scan of that many takes a second or two and the memo at most 16 MB.
_MAX_OPCODES = 1 << 20
# Integers are sizes, strides, offsets and versions (64 bits), and the legacy magic number (77):
# no weight file needs the time arithmetic on a million-digit integer takes. As a dict key, an
# integer must be below 2**64, where each hash is shared by at most 9 integers (no hash flooding).
_MAX_INT = 1 << 128


def scan_pickle(file, size):
    """Scans the pickle at `file`'s position, of at most `size` bytes (`_scan`), and seeks back
    there: `WeightsError` for what no weight file holds."""
    start = file.tell()
    _scan(_Bounded(file, size))
    file.seek(start)


class _Bounded:
    """The `read` and `readline` of a stream holding at most `left` more bytes, for `_scan`: a
    length the pickle declares past them is refused before anything that long is allocated."""

    def __init__(self, stream, left):
        self.stream, self.left = stream, left

    def read(self, size):
        if size > self.left:
            raise WeightsError(f"the pickle declares {size:,} bytes where {max(self.left, 0):,} are left")
        data = self.stream.read(size)
        self.left -= len(data)
        return data

    def readline(self):
        line = self.stream.readline(max(self.left, 0))
        self.left -= len(line)
        return line


_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_INTEGERS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_IN_PLACE = {"SETITEM", "SETITEMS", "APPEND", "APPENDS", "BUILD"}  # they fill the object below, not replace it
_SETS = {"EMPTY_SET", "ADDITEMS", "FROZENSET"}  # sets hash their items, as dicts their keys
_MEMO = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}


def _scan(stream):
    """Reads one pickle's opcodes from `stream` (a `_Bounded`) without building any object,
    following only what kind of item (str, int, other) each stack entry and memo entry holds;
    `WeightsError` unless it has at most `_MAX_OPCODES` opcodes, memo indices no larger than the
    number of opcodes before them, integers below `_MAX_INT`, no sets, and only str or int dict keys
(ints below 2**64)."""
    stack, marks, memo = [], [], {}
    for position, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
        name = opcode.name
        if position >= _MAX_OPCODES:
            raise WeightsError(f"the pickle has more than {_MAX_OPCODES:,} opcodes, more than a weight file needs")
        if name in _MEMO and arg > position:
            raise WeightsError(f"the pickle's opcode {position:,} uses memo index {arg:,}, past the opcodes before it")
        if name in _INTEGERS and not -_MAX_INT < arg < _MAX_INT:
            raise WeightsError(f"the pickle holds an integer of {arg.bit_length():,} bits; weight files need 77 at most")
        if name in _SETS:
            raise WeightsError("the pickle holds a set, which no weight file does")
        before = opcode.stack_before
        above = []
        if pickletools.markobject in before:  # the items above the last mark, then those below it
            if not marks:
                raise WeightsError(f"the pickle's {name} has no mark before it")
            mark = marks.pop()
            above, stack[mark:] = stack[mark:], []
            before = before[:before.index(pickletools.markobject)]
        if len(stack) < len(before):
            raise WeightsError(f"the pickle's {name} finds too few items on the stack")
        below = stack[len(stack) - len(before):]
        del stack[len(stack) - len(before):]
        keys = below[1:2] if name == "SETITEM" else above[::2] if name in ("SETITEMS", "DICT") else []
        if any(key not in ("str", "int") for key in keys):
            raise WeightsError("the pickle has a dict key that is neither a string nor an integer")
        if name == "MARK":
            marks.append(len(stack))
        elif name in _IN_PLACE:
            stack.append(below[0])
        elif name == "DUP":
            stack += below * 2
        elif name == "MEMOIZE":
            memo[len(memo)] = below[0]
            stack += below
        elif name in _MEMO:
            if not stack and name.endswith("PUT"):
                raise WeightsError("the pickle memoizes an empty stack")
            if name.endswith("PUT"):
                memo[arg] = stack[-1]
            else:
                stack.append(memo.get(arg, "other"))
        else:
            kind = "str" if name in _STRINGS else "int" if name in _INTEGERS and abs(arg) < 1 << 64 else "other"
            stack += [kind] * len(opcode.stack_after)
