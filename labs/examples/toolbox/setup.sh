#!/bin/bash
# Runs once at the start, before the learner sees the terminal.
set -e
rm -f ~/report.txt /srv/site/site.conf ~/stopped
mkdir -p /var/lib/toolbox
date +%s > /var/lib/toolbox/started
