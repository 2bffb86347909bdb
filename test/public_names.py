#!/usr/bin/env python3
"""Lists the public names prefork.h declares: namespace-level functions,
types, constants and enumerators of namespace prefork, and the public
members of its structs and classes (constructors and operators left out;
namespace detail, which users never name, left out). Needs clang++: it
reads clang's AST of the header. Usage: test/public_names.py [prefork.h];
the count goes to stderr.
"""
import subprocess, sys, re, json

hdr=sys.argv[1] if len(sys.argv) > 1 else 'prefork.h'
out=subprocess.run(['clang++','-std=c++17','-fsyntax-only','-x','c++','-Xclang','-ast-dump=json','-Xclang','-ast-dump-filter=prefork',hdr],capture_output=True,text=True).stdout
# the filter prints several top-level JSON objects; take the namespace ones
dec=json.JSONDecoder(); i=0; objs=[]
while i<len(out):
    while i<len(out) and out[i] in ' \n\r\t': i+=1
    if i>=len(out): break
    o,j=dec.raw_decode(out,i); objs.append(o); i=j
names=set()
def walk(node, prefix, access_default, in_detail):
    acc=access_default
    for ch in node.get('inner',[]) or []:
        k=ch.get('kind'); n=ch.get('name')
        if ch.get('isImplicit'): continue
        if k=='AccessSpecDecl': acc=ch.get('access'); continue
        if acc in ('private','protected'): continue
        if k=='CXXRecordDecl' and n==node.get('name') and prefix.endswith(n+'::'): continue
        if k=='NamespaceDecl':
            if n=='detail': continue
            walk(ch, prefix+n+'::', 'public', False); continue
        if k in ('CXXRecordDecl',):
            if not ch.get('completeDefinition') and not n: continue
            if n: names.add(prefix+n)
            walk(ch, prefix+(n or '')+'::', 'private' if ch.get('tagUsed')=='class' else 'public', False); continue
        if k=='EnumDecl':
            if n: names.add(prefix+n)
            for e in ch.get('inner',[]):
                if e.get('kind')=='EnumConstantDecl': names.add(prefix+(n+'::' if n and ch.get('scopedEnumTag') else '')+e['name'])
            continue
        if k in ('FunctionDecl','CXXMethodDecl','CXXConstructorDecl','FieldDecl','VarDecl','TypedefDecl','TypeAliasDecl','CXXDestructorDecl'):
            if k in ('CXXConstructorDecl','CXXDestructorDecl'): continue
            if n and not n.startswith('operator'): names.add(prefix+n)
for o in objs:
    if o.get('kind')=='NamespaceDecl' and o.get('name')=='prefork':
        walk(o,'', 'public', False)
for n in sorted(names): print(n)
print(len(names), file=sys.stderr)
