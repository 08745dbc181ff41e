"""The chunkwise decomposition the CUDA kernels implement (src/ops/cuda/chunk_fwd.cu and
chunk_bwd.cu), written out in fp64 PyTorch for one sequence and head, and checked against
autograd of the plain recurrence: forward (prepare / state pass / output) and backward
(intra dV, reverse state pass, state products, intra-chunk gradients), with T not a multiple
of the chunk, gates of -30 and 0, beta in [0, 2), h0 and dht. Prints relative errors (~1e-15).
    python3 bench/gpu/chunk_math_check.py      (Debian's python3-torch is enough)
"""
import torch
torch.manual_seed(0)
D=torch.float64
T,K,V,C=150,16,12,64
scale=K**-0.5
q=torch.randn(T,K,dtype=D); k=torch.nn.functional.normalize(torch.randn(T,K,dtype=D),dim=-1)
v=torch.randn(T,V,dtype=D); g=torch.log(0.7+0.29*torch.rand(T,dtype=D)); g[5]=-30; g[70]=-30;g[71]=0
b=2*torch.rand(T,dtype=D); h0=torch.randn(K,V,dtype=D)*.5; do=torch.randn(T,V,dtype=D); dht=torch.randn(K,V,dtype=D)*.5
def rec(q,k,v,g,b,h0):
    S=h0.clone(); os=[]
    for t in range(T):
        S=S*torch.exp(g[t]); vn=b[t]*(v[t]-S.T@k[t]); S=S+torch.outer(k[t],vn); os.append(scale*S.T@q[t])
    return torch.stack(os),S
xs=[x.clone().requires_grad_() for x in (q,k,v,g,b,h0)]
o,ht=rec(*xs); ((o*do).sum()+(ht*dht).sum()).backward()
ref=[x.grad for x in xs]
# chunk forward
NC=(T+C-1)//C
def chunk(c):
    s=c*C; L=min(C,T-s); 
    pad=lambda x: torch.cat([x[s:s+L], torch.zeros((C-L,)+x.shape[1:],dtype=D)])
    Q,Kc,Vc,G,B=pad(q),pad(k),pad(v),pad(g),pad(b)
    gam=torch.cumsum(G,0)
    return s,L,Q,Kc,Vc,gam,B
S=h0.clone(); hs=[]; Ws=[]; Vps=[]; O=torch.zeros(T,V,dtype=D); As=[]
for c in range(NC):
    s,L,Q,Kc,Vc,gam,B=chunk(c)
    Gam=torch.exp(gam[:,None]-gam[None,:])
    Lm=torch.tril(B[:,None]*(Kc@Kc.T)*Gam,-1)
    A=torch.linalg.inv(torch.eye(C,dtype=D)+Lm)
    W=(A*B[None,:]*torch.exp(gam)[None,:])@Kc; U=(A*B[None,:])@Vc
    hs.append(S.clone()); Vp=U-W@S; Vps.append(Vp); Ws.append(W); As.append(A)
    P=torch.tril(Q@Kc.T*Gam)
    Oc=scale*(torch.exp(gam)[:,None]*(Q@S)+P@Vp); O[s:s+L]=Oc[:L]
    gl=gam[L-1]; Kd=Kc*torch.exp(gl-gam)[:,None]
    S=torch.exp(gl)*S+Kd.T@Vp
print('fwd',(O-o).norm()/o.norm(),(S-ht).norm()/ht.norm())
# backward: B1+B2
dS=dht.clone(); dhs=[None]*NC; dVps=[None]*NC
for c in reversed(range(NC)):
    s,L,Q,Kc,Vc,gam,B=chunk(c); dO=torch.cat([do[s:s+L],torch.zeros(C-L,V,dtype=D)])
    Gam=torch.exp(gam[:,None]-gam[None,:]); P=torch.tril(Q@Kc.T*Gam)
    dhs[c]=dS.clone(); gl=gam[L-1]; Kd=Kc*torch.exp(gl-gam)[:,None]
    dVp=scale*P.T@dO + Kd@dS; dVps[c]=dVp
    Qg=scale*Q*torch.exp(gam)[:,None]
    dS=torch.exp(gl)*dS+Qg.T@dO-Ws[c].T@dVp
dh0=dS
dq=torch.zeros(T,K,dtype=D);dk=torch.zeros(T,K,dtype=D);dv=torch.zeros(T,V,dtype=D);dg=torch.zeros(T,dtype=D);db=torch.zeros(T,dtype=D)
for c in range(NC):
    s,L,Q,Kc,Vc,gam,B=chunk(c); dO=torch.cat([do[s:s+L],torch.zeros(C-L,V,dtype=D)])
    Sx=hs[c]; dSn=dhs[c]; Vp=Vps[c]; dVp=dVps[c]; gl=gam[L-1]; eg=torch.exp(gam)
    # B3
    dQ=scale*eg[:,None]*(dO@Sx.T); dW=-dVp@Sx.T; dK=torch.exp(gl-gam)[:,None]*(Vp@dSn.T)
    dgl_state=torch.exp(gl)*(dSn*Sx).sum()
    # B4
    dgam=torch.zeros(C,dtype=D)
    dgam+= (dQ*Q).sum(1)
    kd=(Kc*dK).sum(1); dgam-=kd; dgam[L-1]+=kd.sum()+dgl_state
    Gam=torch.tril(torch.exp(gam[:,None]-gam[None,:]))
    P=torch.tril(Q@Kc.T)*Gam
    dP=torch.tril(scale*dO@Vp.T)
    R=dP*P; dgam+=R.sum(1)-R.sum(0)
    dPG=dP*Gam
    dQ=dQ+dPG@Kc; dK=dK+dPG.T@Q
    GG=torch.tril(Kc@Kc.T*Gam,-1)
    A=torch.linalg.inv(torch.eye(C,dtype=D)+B[:,None]*GG)
    dA=(dW@Kc.T*eg[None,:]+dVp@Vc.T)*B[None,:]
    X=dA@A.T; dMs=torch.tril(-A.T@X,-1)
    db+=0; dbc=(dMs*GG).sum(1)
    R2=B[:,None]*dMs*GG; dgam+=R2.sum(1)-R2.sum(0)
    F=B[:,None]*dMs*Gam
    Tw=A.T@dW; dK=dK+(B*eg)[:,None]*Tw; tk=(Tw*Kc).sum(1); dbc+=eg*tk; dgam+=B*eg*tk
    Tu=A.T@dVp; dV=B[:,None]*Tu; dbc+=(Tu*Vc).sum(1)
    dK=dK+F@Kc+F.T@Kc
    dgc=torch.flip(torch.cumsum(torch.flip(dgam[:L],[0]),0),[0])
    dq[s:s+L]=dQ[:L];dk[s:s+L]=dK[:L];dv[s:s+L]=dV[:L];dg[s:s+L]=dgc;db[s:s+L]=dbc[:L]
for n,a,r in zip('q k v g b h0'.split(),[dq,dk,dv,dg,db,dh0],ref): print(n,((a-r).norm()/r.norm()).item())
