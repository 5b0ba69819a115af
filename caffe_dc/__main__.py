import sys

from caffe_dc.cli import main

sys.exit(main())
