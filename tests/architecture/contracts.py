"""An import-linter contract: no import cycle between modules, anywhere in the apps.

The ``layers`` contract keeps imports pointing down between layers; inside a layer, modules
may import each other, and this contract makes sure they never do so in a circle. Imports
inside functions count (grimp reads every import statement).
"""

from __future__ import annotations

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class ModuleCyclesContract(Contract):
    type_name = "module_cycles"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = tuple(self.packages)  # type: ignore[arg-type]
        modules = sorted(m for m in graph.modules if m.split(".")[0] in roots)
        edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules) for m in modules}
        cycles = [sorted(c) for c in _strongly_connected(modules, edges) if len(c) > 1]
        return ContractCheck(kept=not cycles, warnings=[], metadata={"cycles": cycles, "edges": edges})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"Modules that import each other in a circle: {', '.join(cycle)}")
            members = set(cycle)
            for module in cycle:
                for imported in check.metadata["edges"][module]:
                    if imported in members:
                        output.print(f"  {module} -> {imported}")
            output.new_line()


def _strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a large graph)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            successors = edges[node]
            if child < len(successors):
                work.append((node, child + 1))
                successor = successors[child]
                if successor not in index:
                    work.append((successor, 0))
                elif successor in on_stack:
                    low[node] = min(low[node], index[successor])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found
