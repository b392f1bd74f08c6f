"""In-process test plugins: modules made from source text, for registry unit tests (external
registration itself is proven with a pip-installed distribution in test_plugins.py)."""
from __future__ import annotations

import textwrap
import types


def module_from_code(name: str, code: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(textwrap.dedent(code), module.__dict__)
    return module


#: a task whose target ("depth") digit-scenes does not have
DEPTH_TASK = '''
    from typing import ClassVar

    import nascore
    from nascore import hookimpl

    class Depth(nascore.Task):
        """Per-pixel depth regression."""
        name: ClassVar[str] = "depth"
        target: ClassVar[str] = "depth"

    @hookimpl
    def nascore_tasks():
        return [Depth]
'''
