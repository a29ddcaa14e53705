"""The dashboard: live statistics, the running configuration and its editing, and ``/metrics``."""

from premier.dashboard.app import DashboardApp

__all__ = ["DashboardApp"]
