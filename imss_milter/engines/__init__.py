"""Detectors (DLP, and later antivirus, spam, URL): each reports named findings; rules decide the actions."""
