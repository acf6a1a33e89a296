//! A one-page dashboard: reads `/json` and shows every check, refreshing itself.

pub const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>probity</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}
h1{font-size:1.3rem;margin:0 0 .2rem}#summary{margin:0 0 1rem;color:#555}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{font-weight:600;background:#eef0f4}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.pending{color:#8a6d00;font-weight:600}
.err{color:#b3261e;font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap}
.muted{color:#777}
</style></head><body>
<h1>probity</h1><p id="summary">loading…</p>
<table><thead><tr><th>Check</th><th>State</th><th>Last outcome</th><th>Last run</th><th>Duration</th><th>Next run</th><th>Errors</th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
function cell(text, cls){const td=document.createElement('td');td.textContent=text;if(cls)td.className=cls;return td}
async function load(){
  try{
    const r=await fetch('json',{headers:{Accept:'application/json'}});const d=await r.json();
    const all=Object.entries(d.CheckDetails).concat(Object.entries(d.JobDetails));
    const failing=all.filter(([,c])=>!c.OK).length;
    document.getElementById('summary').textContent=
      (d.OK?'All checks OK':failing+' of '+all.length+' checks failing')+' · leader '+d.CurrentMaster+' · '+new Date().toLocaleTimeString();
    const rows=document.getElementById('rows');rows.replaceChildren();
    for(const [key,c] of all){
      const tr=document.createElement('tr');
      const state=c.Invalid?['invalid','bad']:c.Pending&&c.OK?['pending','pending']:c.OK?['OK','ok']:['failing','bad'];
      tr.append(cell(key),cell(state[0]+(c.Running?' · running':''),state[1]),cell(c.LastOutcome||'—','muted'),
        cell(c.LastRun.startsWith('0001')?'never':new Date(c.LastRun).toLocaleString()),cell(c.RunDuration),
        cell(c.NextRun?new Date(c.NextRun).toLocaleTimeString():(c.Suspended?'suspended':'—')),cell(c.Errors.join('\n'),'err'));
      rows.append(tr);
    }
  }catch(e){document.getElementById('summary').textContent='cannot load /json: '+e}
}
load();setInterval(load,5000);
</script></body></html>
"##;
