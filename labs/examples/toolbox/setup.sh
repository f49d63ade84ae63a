#!/bin/bash
# Runs once at the start, before the learner sees the terminal.
set -e
# A server left from an earlier run would make step 3's check fail.
pkill -f 'http.server 8000' || true
pkill -fx 'sleep 600' || true
rm -f ~/report.txt /srv/site/site.conf ~/stopped
mkdir -p /var/lib/toolbox
date +%s > /var/lib/toolbox/started
