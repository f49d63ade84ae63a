#!/bin/bash
# Prints how many Markdown pages a site directory has.
dir=${1:-/srv/site}
n=$(find "$dir" -name '*.md' | wc -l)
echo "pages: $n"
