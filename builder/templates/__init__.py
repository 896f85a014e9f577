"""One pipeline-program template per acceleration method (``<method>.py.tmpl``)."""
