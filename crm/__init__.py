"""LoopCRM's command line, settings and composition root (wiring adapters from settings)."""
