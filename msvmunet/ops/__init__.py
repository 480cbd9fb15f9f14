"""Operators of MSVM-UNet: the selective scan and its cross-scan orders."""

from .cross_scan import cross_merge, cross_scan, scan_orders
from .selective_scan import BACKENDS, resolve_backend, selective_scan, ss2d_scan, triton_available

__all__ = [
    "BACKENDS",
    "cross_merge",
    "cross_scan",
    "resolve_backend",
    "scan_orders",
    "selective_scan",
    "ss2d_scan",
    "triton_available",
]
