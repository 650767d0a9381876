#!/usr/bin/env python3
"""The longest functions in the workspace outside the bench and tests/
directories (test modules after `#[cfg(test)]` are skipped too), by a brace
count over each `fn`: a rough figure for the "no function over 80 lines" aim.
Usage: scripts/long-functions.py [N]   (from the repository root; default 10)
"""
import re,os,sys
res=[]
for root,_,files in os.walk('crates'):
    if '/bench' in root or '/tests' in root or 'target' in root: continue
    for f in files:
        if not f.endswith('.rs'): continue
        p=os.path.join(root,f)
        lines=open(p).read().split('\n')
        # skip test modules: track #[cfg(test)] mod tests
        i=0
        test_start=None
        for k,l in enumerate(lines):
            if l.startswith('#[cfg(test)]'):
                test_start=k;break
        limit=test_start if test_start is not None else len(lines)
        while i<limit:
            l=lines[i]
            m=re.match(r'^\s*(pub(\([a-z]+\))?\s+)?(async\s+)?fn\s+(\w+)',l)
            if m and not l.rstrip().endswith(';'):
                depth=0;started=False;j=i
                while j<len(lines):
                    code=re.sub(r'"(\\.|[^"\\])*"','""',lines[j])
                    code=re.sub(r"'(\\.|[^'\\])'","''",code)
                    code=code.split('//')[0]
                    depth+=code.count('{')-code.count('}')
                    if code.count('{'): started=True
                    if started and depth<=0: break
                    j+=1
                res.append((j-i+1,p,i+1,m.group(4)))
            i+=1
res.sort(reverse=True)
for r in res[:int(sys.argv[1]) if len(sys.argv)>1 else 10]: print(*r)
