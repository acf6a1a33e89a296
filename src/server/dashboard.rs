//! The status page and each check's page: self-contained HTML (no external assets, so it works
//! offline and behind `kubectl port-forward` or the API server's service proxy), reading
//! `api/checks` and `api/checks/NS/NAME`. Paths are relative for the same reason.

/// Shared look: readable on a phone, the state colours used everywhere. (Macros, not
/// constants: `concat!` takes literals only, and the pages are assembled at compile time.)
macro_rules! style {
    () => {
        r#"
:root{--ok:#137333;--bad:#b3261e;--warn:#8a6d00;--pend:#6b7280;--bg:#f6f7f9;--fg:#1d2330;--line:#e3e6eb;--card:#fff}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
a{color:#1a56db;text-decoration:none}a:hover{text-decoration:underline}
header.banner{padding:.9rem 1.2rem;color:#fff;background:var(--pend)}
header.banner.ok{background:var(--ok)}header.banner.bad{background:var(--bad)}header.banner.warn{background:var(--warn)}
header.banner h1{font-size:1.15rem;margin:0;display:inline-block;margin-right:.8rem}
header.banner a{color:#fff}
#headline{font-size:1.05rem;font-weight:600}
.sub{opacity:.85;font-size:.85rem}
main{padding:1rem 1.2rem;max-width:1200px;margin:0 auto}
.note{padding:.5rem .8rem;border-radius:6px;margin:.3rem 0;font-size:.9rem}
.note.error{background:#fde8e7;color:var(--bad)}.note.warning{background:#fff4d6;color:var(--warn)}
.controls{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin-bottom:.8rem}
.controls input{flex:1 1 14rem;padding:.45rem .6rem;border:1px solid #c8ccd4;border-radius:6px;font:inherit}
.chip{border:1px solid #c8ccd4;background:#fff;border-radius:999px;padding:.3rem .75rem;font:inherit;cursor:pointer}
.chip[aria-pressed=true]{background:var(--fg);color:#fff;border-color:var(--fg)}
h2.ns{font-size:.8rem;text-transform:uppercase;letter-spacing:.06em;color:#555;margin:1rem 0 .3rem}
.row{display:grid;grid-template-columns:minmax(8rem,1.2fr) 7rem minmax(8rem,1fr) 15rem 10rem;gap:.6rem;align-items:center;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.55rem .75rem;margin:.3rem 0}
.row .name{font-weight:600;overflow-wrap:anywhere}
.err{grid-column:1/-1;color:var(--bad);font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;overflow-wrap:anywhere}
.state{font-weight:600;font-size:.85rem}
.s-ok{color:var(--ok)}.s-failing,.s-invalid{color:var(--bad)}.s-pending{color:var(--pend)}.s-degraded{color:var(--warn)}
.row.s-degraded .err{color:var(--warn)}
.running::after{content:" ●";color:#1a56db;animation:blink 1s infinite}
@keyframes blink{50%{opacity:.2}}
.strip{display:flex;align-items:flex-end;gap:2px;height:26px}
.strip i{display:block;width:8px;min-height:6px;border-radius:2px;background:#c8ccd4}
.strip i.S{background:var(--ok)}.strip i.D{background:#d9a400}.strip i.F,.strip i.C,.strip i.X{background:var(--bad)}.strip i.T{background:#e37400}
.up{font-size:.8rem;color:#444;font-variant-numeric:tabular-nums}
.up b{font-weight:600}
.when{font-size:.8rem;color:#555}
.pager{display:flex;gap:.6rem;justify-content:center;align-items:center;margin:1rem 0}
.pager button{font:inherit;padding:.3rem .8rem;border-radius:6px;border:1px solid #c8ccd4;background:#fff;cursor:pointer}
.pager button:disabled{opacity:.4;cursor:default}
.empty{color:#666;text-align:center;padding:2rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;margin:.8rem 0}
.card h3{margin:0 0 .5rem;font-size:.95rem}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dl.kv dt{color:#666}dl.kv dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;font-size:.85rem}
th{color:#555;font-weight:600}
pre.log{background:#111827;color:#e5e7eb;padding:.6rem .8rem;border-radius:6px;overflow:auto;max-height:24rem;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
button.run{font:inherit;font-weight:600;padding:.4rem 1rem;border-radius:6px;border:0;background:#fff;color:var(--fg);cursor:pointer}
.days{display:flex;gap:2px;align-items:flex-end;height:34px}
.days i{flex:1;min-width:4px;border-radius:2px;background:#c8ccd4}
@media (max-width:760px){
 .row{grid-template-columns:1fr auto}
 .row .strip{grid-column:1/-1}
 .row .up,.row .when{grid-column:1/-1}
 main{padding:.6rem}
}
.value{display:flex;align-items:center;gap:.6rem;padding:.2rem 0}.value .vname{min-width:10rem;font-family:ui-monospace,monospace}.spark{width:200px;height:32px;color:var(--ok)}
"#
    };
}

/// Helpers both pages use: JS errors surface on the page (and in tests) instead of a blank.
macro_rules! common_js {
    () => {
        r#"
window.__errors=[];
window.addEventListener('error',e=>{window.__errors.push(String(e.message||e));});
window.addEventListener('unhandledrejection',e=>{window.__errors.push(String(e.reason));});
document.addEventListener('securitypolicyviolation',e=>{window.__errors.push('blocked by the content security policy: '+e.violatedDirective+' '+(e.blockedURI||''));});
function el(tag,attrs,...kids){const n=document.createElement(tag);for(const[k,v]of Object.entries(attrs||{})){if(v==null)continue;if(k==='class')n.className=v;else if(k==='text')n.textContent=v;else if(k==='style')n.style.cssText=v;else n.setAttribute(k,v)}for(const k of kids)if(k!=null)n.append(k);return n}
function ago(unix){if(!unix)return 'never';const s=Math.round(Date.now()/1000-unix);return s<0?'in '+span(-s):span(s)+' ago'}
function until(unix){if(!unix)return '—';const s=Math.round(unix-Date.now()/1000);return s<=0?'due':'in '+span(s)}
function span(s){s=Math.max(0,Math.round(s));if(s<60)return s+'s';if(s<3600)return Math.floor(s/60)+'m';if(s<86400)return Math.floor(s/3600)+'h '+Math.floor(s%3600/60)+'m';return Math.floor(s/86400)+'d '+Math.floor(s%86400/3600)+'h'}
function ms(d){return d<1000?d+' ms':(d/1000).toFixed(d<10000?2:1)+' s'}
function pct(x){return x==null?'—':(x*100).toFixed(x>=0.9995||x===0?0:x>=0.99?2:1)+'%'}
function when(unix){return new Date(unix*1000).toLocaleString()}
const OUTCOME={S:'Success',F:'Failure',T:'Timeout',X:'StartFailure',C:'Crash','?':'—'};
function strip(runs){
  const max=Math.max(1,...runs.map(r=>r[1]));
  const s=el('span',{class:'strip','aria-label':'last runs'});
  for(const[start,d,o,err]of runs){
    const h=Math.max(25,Math.round(100*d/max));
    s.append(el('i',{class:o,style:'height:'+h+'%',title:when(start)+' · '+OUTCOME[o]+' · '+ms(d)+(err?'\n'+err:'')}));
  }
  return s;
}
"#
    };
}

pub const PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>probity</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%23137333'/%3E%3C/svg%3E">
<style>"#,
    style!(),
    r#"</style></head><body>
<header class="banner" id="banner"><h1>probity</h1><span id="headline">loading…</span><div class="sub" id="sub"></div></header>
<main>
<div id="notes"></div>
<div class="controls">
<input id="q" type="search" placeholder="Search namespace/name" aria-label="Search checks" autocomplete="off">
<button class="chip" data-f="all">All <b data-c="total"></b></button>
<button class="chip" data-f="failing">Failing <b data-c="failing"></b></button>
<button class="chip" data-f="degraded">Degraded <b data-c="degraded"></b></button>
<button class="chip" data-f="unstable">Unstable <b data-c="unstable"></b></button>
<button class="chip" data-f="suspended">Suspended <b data-c="suspended"></b></button>
<button class="chip" data-f="invalid">Invalid <b data-c="invalid"></b></button>
</div>
<div id="list" aria-live="polite"></div>
<div class="pager"><button id="prev">‹ Prev</button><span id="range"></span><button id="next">Next ›</button></div>
</main>
<script>"#,
    common_js!(),
    r#"
const params=new URLSearchParams(location.search);
const view={q:params.get('q')||'',filter:params.get('filter')||'all',offset:+(params.get('offset')||0),limit:100};
let last='';let timer=null;
function remember(){const p=new URLSearchParams();if(view.q)p.set('q',view.q);if(view.filter!=='all')p.set('filter',view.filter);if(view.offset)p.set('offset',view.offset);const s=p.toString();history.replaceState(null,'',s?'?'+s:location.pathname)}
function render(d){
  const c=d.counts;const bad=c.failing;
  const banner=document.getElementById('banner');
  banner.className='banner '+(d.ok?'ok':'bad');
  document.getElementById('headline').textContent=c.total===0?'No checks yet':d.ok?(c.total===1?'The check is passing':'All '+c.total+' checks passing')+(c.degraded?' · '+c.degraded+' degraded':''):bad===0?'Problems outside the checks':bad+' of '+c.total+' checks failing';
  document.getElementById('sub').textContent='leader '+(d.leader||'none')+' · served by '+d.identity+' · '+c.running+' running · updated '+new Date().toLocaleTimeString();
  const notes=document.getElementById('notes');notes.replaceChildren();
  for(const e of d.errors)notes.append(el('div',{class:'note error',text:e}));
  for(const w of d.warnings)notes.append(el('div',{class:'note warning',text:w}));
  for(const b of document.querySelectorAll('[data-c]'))b.textContent=c[b.dataset.c];
  for(const b of document.querySelectorAll('.chip'))b.setAttribute('aria-pressed',String(b.dataset.f===view.filter));
  const list=document.getElementById('list');list.replaceChildren();
  let ns=null;
  for(const k of d.checks){
    if(k.namespace!==ns){ns=k.namespace;list.append(el('h2',{class:'ns',text:ns}))}
    const row=el('div',{class:'row s-'+k.state,'data-check':k.namespace+'/'+k.name,'data-state':k.state});
    const label=k.state==='ok'?'passing':k.state;
    row.append(
      el('a',{class:'name',href:'checks/'+encodeURIComponent(k.namespace)+'/'+encodeURIComponent(k.name),text:k.name}),
      el('span',{class:'state s-'+k.state+(k.running?' running':''),text:label+(k.idle?' · idle':'')+(k.cause==='runner'?' (runner)':'')+(k.suspended?' · suspended':'')+(k.held?' · '+k.held:'')}),
      strip(k.runs),
      el('span',{class:'up',title:'share of runs that passed'},'24h ',el('b',{text:pct(k.uptime['24h'])}),' · 7d ',el('b',{text:pct(k.uptime['7d'])}),' · 30d ',el('b',{text:pct(k.uptime['30d'])})),
      el('span',{class:'when'},'last '+ago(k.lastRun),el('br'),k.suspended?'suspended':'next '+until(k.nextRun)+(k.every?' · every '+k.every:'')));
    if(k.errors.length&&k.state!=='ok')row.append(el('div',{class:'err',text:(k.state==='degraded'?'degraded: ':'')+(k.failingSince?'failing for '+span(Date.now()/1000-k.failingSince)+': ':'')+k.errors.join('\n')}));
    list.append(row);
  }
  if(!d.checks.length)list.append(el('div',{class:'empty',text:c.total?'No check matches.':'No checks yet.'}));
  const end=Math.min(d.offset+d.checks.length,d.matched);
  document.getElementById('range').textContent=d.matched?(d.offset+1)+'–'+end+' of '+d.matched:'';
  document.getElementById('prev').disabled=d.offset<=0;
  document.getElementById('next').disabled=end>=d.matched;
  // For the page benchmark: when the first list was drawn.
  if(!performance.getEntriesByName('probity:drawn').length)performance.mark('probity:drawn');
}
async function load(){
  clearTimeout(timer);
  try{
    const p=new URLSearchParams({q:view.q,filter:view.filter,offset:view.offset,limit:view.limit});
    const r=await fetch('api/checks?'+p,{headers:{Accept:'application/json'}});
    if(!r.ok)throw new Error('api/checks answered '+r.status);
    const text=await r.text();
    if(text!==last){last=text;render(JSON.parse(text))}
    else document.getElementById('sub').textContent=document.getElementById('sub').textContent.replace(/updated .*/,'updated '+new Date().toLocaleTimeString());
  }catch(e){document.getElementById('headline').textContent='cannot load the checks: '+e.message;document.getElementById('banner').className='banner bad'}
  timer=setTimeout(load,5000);
}
const q=document.getElementById('q');q.value=view.q;
let typing=null;q.addEventListener('input',()=>{clearTimeout(typing);typing=setTimeout(()=>{view.q=q.value.trim();view.offset=0;remember();load()},150)});
for(const b of document.querySelectorAll('.chip'))b.addEventListener('click',()=>{view.filter=b.dataset.f;view.offset=0;remember();load()});
document.getElementById('prev').addEventListener('click',()=>{view.offset=Math.max(0,view.offset-view.limit);remember();load()});
document.getElementById('next').addEventListener('click',()=>{view.offset+=view.limit;remember();load()});
load();
</script></body></html>
"#
);

pub const CHECK_PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>probity · check</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%23137333'/%3E%3C/svg%3E">
<style>"#,
    style!(),
    r#"</style></head><body>
<header class="banner" id="banner"><a href="../../" id="back">← all checks</a><br><h1 id="title">…</h1><span id="headline">loading…</span>
<div class="sub"><button class="run" id="run">Run now</button> <span id="runmsg"></span></div></header>
<main>
<div id="notes"></div>
<div class="card"><h3>Check</h3><dl class="kv" id="brief"></dl></div>
<div class="card"><h3>Last 30 days</h3><div class="days" id="days"></div><div class="sub" id="daysnote"></div></div>
<div class="card"><h3>Events</h3><table><thead><tr><th>When</th><th>What</th><th>For</th></tr></thead><tbody id="events"></tbody></table></div>
<div class="card"><h3>Runs</h3><table><thead><tr><th>Started</th><th>Outcome</th><th>Duration</th><th>Errors</th><th>Pod</th></tr></thead><tbody id="runs"></tbody></table></div>
<div class="card" id="valuescard" hidden><h3>Values</h3><div id="values"></div></div>
<div class="card"><h3>Logs of retained runs</h3><div id="logs">loading…</div></div>
</main>
<script>"#,
    common_js!(),
    r#"
const parts=location.pathname.split('/');
const ns=decodeURIComponent(parts[parts.length-2]),name=decodeURIComponent(parts[parts.length-1]);
const root=location.pathname.slice(0,location.pathname.length-('checks/'+parts[parts.length-2]+'/'+parts[parts.length-1]).length);
const api=root+'api/checks/'+encodeURIComponent(ns)+'/'+encodeURIComponent(name);
document.getElementById('back').setAttribute('href',root);
document.title='probity · '+ns+'/'+name;
document.getElementById('title').textContent=ns+'/'+name;
function kv(dl,k,v){if(v==null||v==='')return;dl.append(el('dt',{text:k}),el('dd',{text:String(v)}))}
function render(c){
  const d=c.detail,s=c.status,b=c.brief;
  const state=d.Invalid?'invalid':!d.OK?'failing':d.Pending?'pending':d.Degraded?'degraded':'ok';
  document.getElementById('banner').className='banner '+(state==='ok'?'ok':state==='degraded'?'warn':state==='pending'?'':'bad');
  document.getElementById('headline').textContent=(state==='ok'?'passing':state)+(d.Running?' · running':'')+(s.failingSinceUnix?' for '+span(Date.now()/1000-s.failingSinceUnix):s.degradedSinceUnix&&d.Degraded?' for '+span(Date.now()/1000-s.degradedSinceUnix):'');
  const notes=document.getElementById('notes');notes.replaceChildren();
  if(d.Errors.length&&state!=='ok')notes.append(el('div',{class:'note error',text:d.Errors.join('\n')}));
  if(d.Degraded&&d.Warnings.length)notes.append(el('div',{class:'note warning',text:'degraded (OK for Kuberhealthy clients): '+d.Warnings.join('\n')}));
  const dl=document.getElementById('brief');dl.replaceChildren();
  kv(dl,'Runs',b.runs==='pod'?'a pod'+(b.image?' ('+b.image+')':''):'probe: '+b.runs);
  kv(dl,'Every',b.schedule?b.schedule+(b.timeZone?' ('+b.timeZone+')':''):d.RunInterval);
  kv(dl,'Timeout',d.Timeout);
  kv(dl,'Thresholds',(b.failureThreshold||b.successThreshold)?'fails after '+(b.failureThreshold||1)+', passes after '+(b.successThreshold||1):null);
  kv(dl,'Single run',b.singleRunOnly?'yes':null);
  kv(dl,'Suspended',d.Suspended?'yes':null);
  kv(dl,'Maintenance',d.Maintenance?d.Maintenance+': it runs and is recorded; notifications are held':null);
  kv(dl,'Blocked by',d.BlockedBy&&d.BlockedBy.length?d.BlockedBy.join(', ')+': a check it depends on fails too; its failure notifies no one':null);
  kv(dl,'Cause',d.Cause==='runner'?'runner: the check could not run or ended without a report; what it checks may be fine':d.Cause==='target'?'target: the check found a fault in what it checks':null);
  kv(dl,'Idle',d.Standing==='Idle'?'yes: healthy and scaled to zero; the check reads its status and sends it no traffic':null);
  kv(dl,'Flapping',d.Flapping?'yes: its verdict changed 5 times within 10 minutes; notifications are held until it is stable':null);
  kv(dl,'Uptime','24h '+pct(d.Uptime['24h'])+' · 7d '+pct(d.Uptime['7d'])+' · 30d '+pct(d.Uptime['30d']));
  kv(dl,'Runs so far',d.SuccessCount+' passed, '+d.FailureCount+' failed');
  kv(dl,'Last run',d.LastRun.startsWith('0001')?'never':new Date(d.LastRun).toLocaleString()+' ('+ago(Date.parse(d.LastRun)/1000)+')');
  kv(dl,'Next run',d.NextRun?new Date(d.NextRun).toLocaleString()+' ('+until(Date.parse(d.NextRun)/1000)+')':d.Suspended?'suspended':'—');
  kv(dl,'Invalid',d.Invalid);
  const days=document.getElementById('days');days.replaceChildren();
  const byDay=new Map((s.days||[]).map(x=>[x.day,x]));
  for(let i=29;i>=0;i--){
    const t=new Date(Date.now()-i*86400000).toISOString().slice(0,10);const x=byDay.get(t);
    const up=x&&x.runs?x.successes/x.runs:null;
    const colour=up==null?'#c8ccd4':up>=0.999?'var(--ok)':up>=0.95?'#e37400':'var(--bad)';
    days.append(el('i',{style:'height:100%;background:'+colour,title:t+': '+(x?x.runs+' runs, '+pct(up)+' passed'+(x.failingSeconds?', failing '+span(x.failingSeconds):'')+(x.durationP50Ms!=null?', median '+ms(x.durationP50Ms):''):'no runs')}));
  }
  const ev=document.getElementById('events');ev.replaceChildren();
  const tr=s.transitions||[];
  tr.forEach((t,i)=>{
    const end=i>0?tr[i-1].atUnix:null;
    ev.append(el('tr',{},el('td',{text:when(t.atUnix)}),el('td',{class:t.ok?'s-ok':'s-failing',text:t.ok?'recovered':'became failing'}),el('td',{text:end?span(end-t.atUnix):(t.ok?'—':'still, '+span(Date.now()/1000-t.atUnix))})));
  });
  if(!tr.length)ev.append(el('tr',{},el('td',{colspan:3,class:'empty',text:'The verdict has not changed yet.'})));
  const runs=document.getElementById('runs');runs.replaceChildren();
  (s.history||[]).forEach((h,i)=>{
    const o=(h.outcome||'—')+(h.standing==='Idle'?' · idle':h.standing==='Degraded'?' · degraded':'');
    const timed=(h.timings||[]).map(x=>({coldStartFirstByte:'cold start: first byte ',coldStartActive:'cold start: Active after ',warmFirstByte:'warm: first byte '}[x.name]||x.name+' ')+ms(x.ms));
    runs.append(el('tr',{'data-run':h.uuid},el('td',{text:when(h.startUnix)}),el('td',{class:h.standing==='Degraded'?'s-degraded':h.outcome==='Success'?'s-ok':'s-failing',text:o}),el('td',{text:ms(Math.round(h.runDuration/1e6))}),el('td',{class:'err',text:(h.errors||[]).concat(timed).join('\n')}),el('td',{text:c.pods[i]||''})));
  });
  if(!(s.history||[]).length)runs.append(el('tr',{},el('td',{colspan:5,class:'empty',text:'No run has finished yet.'})));
  const vals=document.getElementById('values');vals.replaceChildren();
  const hist=(s.history||[]).slice().reverse();
  const names=[...new Set(hist.flatMap(h=>Object.keys(h.values||{})))].sort();
  document.getElementById('valuescard').hidden=!names.length;
  for(const n of names){
    const pts=hist.map((h,i)=>[i,(h.values||{})[n]]).filter(p=>typeof p[1]==='number');
    const lo=Math.min(...pts.map(p=>p[1])),hi=Math.max(...pts.map(p=>p[1])),w=200,ht=32,spread=hi-lo||1;
    const svg=document.createElementNS('http://www.w3.org/2000/svg','svg');svg.setAttribute('viewBox','0 0 '+w+' '+ht);svg.setAttribute('class','spark');svg.setAttribute('data-value',n);
    const line=document.createElementNS('http://www.w3.org/2000/svg','polyline');
    line.setAttribute('points',pts.map(([i,v])=>(hist.length>1?i*w/(hist.length-1):w/2).toFixed(1)+','+(ht-2-(v-lo)*(ht-4)/spread).toFixed(1)).join(' '));
    line.setAttribute('fill','none');line.setAttribute('stroke','currentColor');line.setAttribute('stroke-width','1.5');
    svg.append(line);
    vals.append(el('div',{class:'value'},el('span',{class:'vname',text:n}),svg,el('b',{text:String(pts[pts.length-1][1])}),el('span',{class:'sub',text:'min '+lo+' · max '+hi+' over the last '+pts.length+' runs'})));
  }
}
async function loadLogs(){
  const box=document.getElementById('logs');
  try{
    const r=await fetch(api+'/logs');const d=await r.json();
    if(!r.ok)throw new Error(d.error||r.status);
    box.replaceChildren();
    for(const l of d.logs)box.append(el('div',{class:'sub',text:l.source+(l.started?' · '+when(l.started):'')+(l.truncated?' · the end of a longer output':'')}),el('pre',{class:'log',text:l.text||'(no output)'}));
    if(!d.logs.length)box.append(el('div',{class:'empty',text:'No retained run has output.'}));
  }catch(e){box.textContent='cannot load the logs: '+e.message}
}
async function load(){
  try{
    const r=await fetch(api,{headers:{Accept:'application/json'}});
    if(r.status===404){document.getElementById('headline').textContent='no such check';document.getElementById('banner').className='banner bad';return}
    if(!r.ok)throw new Error('answered '+r.status);
    render(await r.json());
  }catch(e){document.getElementById('headline').textContent='cannot load the check: '+e.message}
}
document.getElementById('run').addEventListener('click',async()=>{
  const msg=document.getElementById('runmsg');
  let token=sessionStorage.getItem('probity-run-token');
  if(!token){token=prompt('Run token (probity --run-token)');if(!token)return;sessionStorage.setItem('probity-run-token',token)}
  const r=await fetch(root+'api/run?'+new URLSearchParams({namespace:ns,healthcheck:name}),{method:'POST',headers:{Authorization:'Bearer '+token}});
  if(r.status===401){sessionStorage.removeItem('probity-run-token');msg.textContent='the token was refused'}
  else if(r.ok)msg.textContent='run requested '+new Date().toLocaleTimeString();
  else msg.textContent=(await r.text())||('answered '+r.status);
  setTimeout(()=>{load();loadLogs()},1500);
});
load();loadLogs();setInterval(load,5000);setInterval(loadLogs,30000);
</script></body></html>
"#
);

/// The `Content-Security-Policy` of both pages: nothing but their own inline script and style,
/// allowed by hash (so an injected one is not), requests to this origin only, the inline
/// favicon, and no framing (`frame-ancestors`), plugins, forms or base URL.
pub fn content_security_policy() -> &'static str {
    static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let scripts = [PAGE, CHECK_PAGE].map(|p| hash_of(inline(p, "script")));
        let styles = [PAGE, CHECK_PAGE].map(|p| hash_of(inline(p, "style")));
        let list = |hashes: &[String]| {
            let mut v: Vec<&str> = hashes.iter().map(String::as_str).collect();
            v.dedup();
            v.join(" ")
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; img-src data:; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            list(&scripts),
            list(&styles)
        )
    });
    &POLICY
}

/// The text of a page's one inline `<tag>` element.
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = page.find(&open).expect("the page has the element") + open.len();
    let end = start + page[start..].find(&format!("</{tag}>")).expect("closed");
    &page[start..end]
}

/// A CSP source for `text`: `'sha256-BASE64'`.
fn hash_of(text: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

#[cfg(test)]
mod csp_tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_each_pages_one_inline_script_and_style() {
        let policy = content_security_policy();
        for page in [PAGE, CHECK_PAGE] {
            for tag in ["script", "style"] {
                // One element each: the policy is made from the first.
                assert_eq!(page.matches(&format!("<{tag}")).count(), 1, "{tag}");
                let hash = hash_of(inline(page, tag));
                assert!(policy.contains(&hash), "{tag} {hash} not in {policy}");
            }
            // Nothing the policy would refuse: no inline handlers, no javascript: URLs.
            for bad in [" onclick=", " onload=", "javascript:", " style=\""] {
                assert!(!page.contains(bad), "{bad}");
            }
        }
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"));
        // A known digest: SHA-256 of the empty string.
        assert_eq!(
            hash_of(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }
}
