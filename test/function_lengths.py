#!/usr/bin/env python3
"""Lists the functions of C++ files that are longer than a limit.

A function is a brace-enclosed body met at namespace or class level after a
parenthesised signature; its length runs from the first line of that
signature to the closing brace, blank and comment lines included (lambdas
count within the function that holds them). Usage:
    test/function_lengths.py [--limit 60] [--top N] FILE...
Exit status 1 when any function is over the limit.
"""
import re
import sys

SCOPE = re.compile(r'\b(namespace|struct|class|union|enum)\b[^()]*$|extern\s+"C"\s*$')


def strip(text):
    """Blanks comments, strings and character literals, keeping newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i)); i = j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2) + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:j])); i = j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            out.append(c + ' ' * (j - i - 1) + c); i = j + 1
        else:
            out.append(c); i += 1
    return ''.join(out)


def functions(path):
    text = strip(open(path, encoding='utf-8').read())
    found, stack = [], []  # stack of (kind, start offset)
    head = 0               # where the current declaration began
    for i, c in enumerate(text):
        if c == '{':
            decl = text[head:i]
            if all(k == 'scope' for k, _ in stack):
                if SCOPE.search(decl.strip().split('\n')[-1] if decl.strip() else '') or '(' not in decl \
                        or re.search(r'=\s*$', decl.strip()):
                    stack.append(('scope', i))
                else:
                    first = head + len(decl) - len(decl.lstrip())
                    stack.append(('function', first))
            else:
                stack.append(('block', i))
            head = i + 1
        elif c == '}':
            kind, start = stack.pop() if stack else ('scope', 0)
            if kind == 'function':
                first = text.count('\n', 0, start) + 1
                last = text.count('\n', 0, i) + 1
                m = re.findall(r'([A-Za-z_~][\w:~]*|operator\s*\S+)\s*\(', text[start:text.find('{', start)])
                found.append((last - first + 1, m[0] if m else '?', path, first))
            head = i + 1
        elif c == ';' or (c == ':' and text[i - 1:i + 1] != '::' and text[i:i + 2] != '::'
                          and re.search(r'\b(public|private|protected)\s*$', text[head:i])):
            if all(k == 'scope' for k, _ in stack):
                head = i + 1
        elif c == '#' and (i == 0 or text[i - 1] == '\n'):
            j = text.find('\n', i)
            while j > 0 and text[j - 1] == '\\':
                j = text.find('\n', j + 1)
            if all(k == 'scope' for k, _ in stack):
                head = j if j > 0 else len(text)
    return found


def main(argv):
    limit, top, paths = 60, 0, []
    args = iter(argv)
    for a in args:
        if a == '--limit':
            limit = int(next(args))
        elif a == '--top':
            top = int(next(args))
        else:
            paths.append(a)
    everything = sorted((f for p in paths for f in functions(p)), reverse=True)
    over = [f for f in everything if f[0] > limit]
    for length, name, path, line in (everything[:top] if top else over):
        print(f'{length:5d}  {name}  {path}:{line}')
    longest = f'{everything[0][1]} at {everything[0][0]} lines' if everything else 'none'
    print(f'{len(everything)} functions, {len(over)} over {limit} lines; the longest: {longest}')
    return 1 if over else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
