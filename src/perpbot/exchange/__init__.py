"""Exchange port, precision filters, and adapters (simulated now; live and paper later)."""
