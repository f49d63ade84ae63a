#!/bin/bash
grep -qx 'title=Toolbox' /srv/site/site.conf
