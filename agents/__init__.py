"""The Faust worker: inference, scene rules, alerts and site health (see agents/app.py)."""
