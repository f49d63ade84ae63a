#!/bin/bash
# Done when ~/greeting.txt holds exactly the line "hello dozlab".
grep -qx 'hello dozlab' ~/greeting.txt
