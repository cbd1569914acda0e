"""convbook — the library behind "Convolutions, Verified".

Every formula, transform and check the book shows lives here; the notebooks narrate and
call it, the tests call the same functions.  Claims are registered in
:mod:`convbook.claims`; ``python -m convbook verify`` runs them all.
"""

from .claims import Verdict, all_claims, get_claim, run_claims, verify

__version__ = "0.1.0"

__all__ = ["Verdict", "all_claims", "get_claim", "run_claims", "verify", "__version__"]
