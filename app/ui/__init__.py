"""The web console (/ui): pages, live updates and charts."""
