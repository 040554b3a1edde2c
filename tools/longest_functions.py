#!/usr/bin/env python3
"""Longest function bodies in C++ headers: a brace scanner (comments and
string literals stripped) that counts, for every '{' whose preceding
statement text ends with ')' (optionally followed by const/noexcept/override/
-> type/ : init list) and does not start with a control keyword, the lines
from the signature's first line to the matching '}'."""
# Usage: tools/longest_functions.py include [N]
import os, re, sys

def strip(src):
    out = re.sub(r'//[^\n]*', '', src)
    out = re.sub(r'/\*.*?\*/', lambda m: '\n' * m.group(0).count('\n'), out, flags=re.S)
    out = re.sub(r'"(\\.|[^"\\\n])*"', '""', out)
    out = re.sub(r"'(\\.|[^'\\\n])*'", "''", out)
    return out

CTRL = re.compile(r'^\s*(if|for|while|switch|do|else|catch|try|namespace|struct|class|union|enum|return)\b')

def functions(path):
    src = strip(open(path).read())
    res, stack, last = [], [], 0  # last = index after the previous ; { }
    line_of = lambda i: src.count('\n', 0, i) + 1
    for i, ch in enumerate(src):
        if ch == '{':
            head = src[last:i].strip()
            is_fn = bool(head) and not CTRL.match(head) and '(' in head and \
                re.search(r'\)\s*(const|noexcept|override|final|mutable|\s|->\s*[\w:<>,\s&*]+|:[^;]*)*$', head, re.S) and \
                '=' not in head.split('(')[0]
            stack.append((is_fn, last + (len(src[last:i]) - len(src[last:i].lstrip())), head))
            last = i + 1
        elif ch == '}':
            if stack:
                is_fn, start, head = stack.pop()
                if is_fn and not any(s[0] for s in stack):
                    res.append((line_of(i) - line_of(start) + 1, path, line_of(start), head.split('\n')[-1][:70]))
            last = i + 1
        elif ch == ';':
            last = i + 1
    return res

root, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10
allf = []
for d, _, files in os.walk(root):
    for f in files:
        if f.endswith(('.hpp', '.h', '.cpp')):
            allf += functions(os.path.join(d, f))
for r in sorted(allf, reverse=True)[:n]:
    print(f'{r[0]:4d}  {os.path.relpath(r[1], root)}:{r[2]}  {r[3]}')
