"""What handler-base drags into every application: the contract and transport, no store."""

import subprocess
import sys
from importlib.metadata import distribution

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import handler_base
for module in pkgutil.walk_packages(handler_base.__path__, "handler_base."):
    if not module.name.startswith("handler_base.testing"):
        importlib.import_module(module.name)
print(" ".join(sorted({n.split(".")[0] for n in sys.modules} & {"pymilvus", "pypdf", "ray"})))
"""


def test_the_knowledge_store_is_not_a_dependency_and_pdf_is_an_extra() -> None:
    requires = distribution("handler-base").requires or []
    assert not [r for r in requires if r.startswith("pymilvus")]
    (pdf,) = [r for r in requires if r.startswith("pypdf")]
    assert pdf.replace("'", '"').endswith('extra == "pdf"')


def test_every_module_imports_on_its_own_without_milvus_pdf_or_ray() -> None:
    # A fresh interpreter: an import cycle fails here whatever order pytest loaded things.
    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert imported.stdout.split() == []
