import re,sys,statistics as st
rows={}
for l in open(sys.argv[1]):
    m=re.search(r'rep (\d+) (\S+)\s+N=(\d+)\s+(\d+) orders/s\s+(\d+) ns/op\s+([\d.]+) allocs/op\s+([\d.]+) cpu',l)
    if m:
        r,c,n,ops,ns,al,cpu=m.groups(); rows[(int(r),c,int(n))]=(float(ops),float(cpu))
cands=sorted({k[1] for k in rows},key=lambda c:["null","store","pebble-gc","pebble-apply","log","log-falloc","log-zeroed"].index(c))
reps=sorted({k[0] for k in rows})
for c in cands:
  for n in (1,64,1024):
    tp=[rows[(r,c,n)][0]/rows[(r,'store',n)][0] for r in reps]
    cp=[rows[(r,c,n)][1]/rows[(r,'store',n)][1] for r in reps]
    print(f"{c:13s} N={n:<5d} paired ops ratio median {st.median(tp):.2f} [{min(tp):.2f}-{max(tp):.2f}]  cpu ratio median {st.median(cp):.2f} [{min(cp):.2f}-{max(cp):.2f}]")
