#!/bin/bash
grep -qx 'pages: 3' ~/report.txt
