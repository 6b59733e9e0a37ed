__version__ = "0.2.0"
#: The default random stream's public name, for ``vsgen --version`` without
#: importing the streams (and NumPy); a test keeps it equal to the stream's label.
DEFAULT_STREAM_LABEL = "vsgen/1"
