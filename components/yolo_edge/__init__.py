"""yolo-edge: YOLO inference as an AWS IoT Greengrass v2 component."""

__version__ = "0.1.0"
