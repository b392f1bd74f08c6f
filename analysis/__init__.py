"""Reading runs: one HTML page of a run (``report``) and strategies compared over seeds (``compare``)."""
