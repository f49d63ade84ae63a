#!/bin/bash
# Step 2 starts with a template the learner fills in.
printf 'title=\n' > /srv/site/site.template
