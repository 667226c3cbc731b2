// SanteDB's side of xcron.xml, for xcron's tests, compiled with Mono's mcs.
//
// The serializable classes below are declared exactly as SanteDB publishes them (santedb/santedb-api,
// SanteDB.Core.Api/Configuration/JobConfigurationSection.cs and Jobs/IJobManagerService.cs): the same
// XmlType/XmlAttribute/XmlArray/XmlArrayItem names, namespaces and member order; attributes that only
// matter to SanteDB's configuration UI or JSON (DisplayName, Editor, JsonProperty ...) are left out as
// they do not change what XmlSerializer reads or writes. AppliesTo is ExtensionMethods.AppliesTo,
// replayed line for line, with refDate standing in for DateTime.Now (SanteDB's timer passes
// DateTime.Now as refDate).
//
// Commands (all times are local wall times of the host; set TZ to choose the host's zone):
//   write OUT [--crlf] [--bom] [--modern] ITEM...   serialize a list the way SanteDB's code paths do
//       ITEM: job=TYPE[|startType]   a JobItemConfiguration (startType: immediate|delay|schedule|never)
//             add=FIELD=VALUE;...     a JobItemSchedule of the last job; FIELD: type (scheduled|interval),
//                                     days (Monday,Friday), start, stop, interval (int)
//             param=int:5 | param=string:x | param=bool:true   a positional parameter of the last job
//       DATE VALUES: min | max | now | local:ISO | utc:ISO | unspecified:ISO | offset:ISO+hh:mm
//   resave IN OUT        XmlFileJobScheduleManager: deserialize IN at start-up, SaveCron() over OUT
//   dump IN              what SanteDB's classes hold, one line per job and per schedule
//   applies IN TYPE T... DefaultJobManagerService's timer: at each local time T (in order) every schedule
//                        of TYPE is checked with AppliesTo(T, lastRun); a hit runs the job (lastRun = T).
//                        Prints "T 1" or "T 0" per time.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Xml;
using System.Xml.Serialization;

namespace SanteDB.Core.Jobs
{
    [XmlType(nameof(JobStartType), Namespace = "http://santedb.org/configuration")]
    public enum JobStartType
    {
        [XmlEnum("immediate")] Immediate,
        [XmlEnum("delay")] DelayStart,
        [XmlEnum("schedule")] TimerOnly,
        [XmlEnum("never")] Never
    }

    public interface IJobSchedule
    {
        SanteDB.Core.Configuration.JobScheduleType Type { get; }
        TimeSpan? Interval { get; }
        DateTime StartTime { get; }
        DateTime? StopTime { get; }
        DayOfWeek[] Days { get; }
    }
}

namespace SanteDB.Core.Configuration
{
    using SanteDB.Core.Jobs;

    [XmlType(nameof(JobItemConfiguration), Namespace = "http://santedb.org/configuration")]
    public class JobItemConfiguration
    {
        public JobItemConfiguration()
        {
            this.Schedule = new List<JobItemSchedule>();
        }

        [XmlAttribute("type")]
        public String TypeXml { get; set; }

        [XmlAttribute("startType")]
        public JobStartType StartType { get; set; }

        [XmlArray("schedule"), XmlArrayItem("add")]
        public List<JobItemSchedule> Schedule { get; set; }

        [XmlArray("parameters"),
            XmlArrayItem("int", typeof(Int32)),
            XmlArrayItem("string", typeof(string)),
            XmlArrayItem("bool", typeof(bool))]
        public object[] Parameters { get; set; }
    }

    [XmlType(nameof(JobScheduleType), Namespace = "http://santedb.org/configuration")]
    public enum JobScheduleType
    {
        [XmlEnum("scheduled")] Scheduled,
        [XmlEnum("interval")] Interval
    }

    [XmlType(nameof(JobItemSchedule), Namespace = "http://santedb.org/configuration")]
    public class JobItemSchedule : IJobSchedule
    {
        [XmlAttribute("type")]
        public JobScheduleType Type { get; set; }

        [XmlAttribute("days")]
        public DayOfWeek[] RepeatOn { get; set; }

        [XmlAttribute("start")]
        public DateTime StartDate { get; set; }

        [XmlAttribute("stop")]
        public DateTime StopDate { get; set; }

        [XmlIgnore]
        public bool StopDateSpecified { get; set; }

        [XmlAttribute("interval")]
        public int Interval { get; set; }

        [XmlIgnore]
        public bool IntervalSpecified { get; set; }

        [XmlIgnore]
        TimeSpan? IJobSchedule.Interval => this.IntervalSpecified ? (TimeSpan?)new TimeSpan(0, 0, this.Interval) : null;

        [XmlIgnore]
        DateTime IJobSchedule.StartTime => this.StartDate;

        [XmlIgnore]
        DateTime? IJobSchedule.StopTime => this.StopDateSpecified ? (DateTime?)this.StopDate : null;

        [XmlIgnore]
        DayOfWeek[] IJobSchedule.Days => this.RepeatOn;
    }
}

namespace XcronTests
{
    using SanteDB.Core.Configuration;
    using SanteDB.Core.Jobs;

    public static class SanteDbSide
    {
        static readonly XmlSerializer Serializer = new XmlSerializer(typeof(List<JobItemConfiguration>));

        // ExtensionMethods.AppliesTo, with refDate for DateTime.Now.
        public static bool AppliesTo(IJobSchedule me, DateTime refDate, DateTime? lastRun)
        {
            var retVal = refDate >= me.StartTime;
            retVal &= !me.StopTime.HasValue || refDate < me.StopTime.Value;
            if (me.Type == JobScheduleType.Interval)
            {
                retVal &= (!lastRun.HasValue || refDate.Subtract(lastRun.Value) > me.Interval);
            }
            else if (me.Type == JobScheduleType.Scheduled)
            {
                if (me.Days != null && me.Days.Any())
                {
                    retVal &= me.Days.Any(r => r == refDate.DayOfWeek) &&
                        refDate.Hour >= me.StartTime.Hour &&
                        refDate.Minute >= me.StartTime.Minute &&
                        refDate.Date > me.StartTime;
                    retVal &= !lastRun.HasValue ? refDate.Hour == me.StartTime.Hour : (lastRun.Value.Date < refDate.Date);
                }
                else
                {
                    retVal &= refDate.Date == me.StartTime.Date &&
                        refDate.Hour >= me.StartTime.Hour &&
                        refDate.Minute >= me.StartTime.Minute &&
                        !lastRun.HasValue;
                }
            }
            return retVal;
        }

        static DateTime ParseDate(string text)
        {
            if (text == "min") return DateTime.MinValue;
            if (text == "max") return DateTime.MaxValue;
            if (text == "now") return DateTime.Now;
            var colon = text.IndexOf(':');
            var kind = text.Substring(0, colon);
            var value = text.Substring(colon + 1);
            var styles = DateTimeStyles.None;
            switch (kind)
            {
                case "local":
                    return DateTime.SpecifyKind(DateTime.Parse(value, CultureInfo.InvariantCulture), DateTimeKind.Local);
                case "utc":
                    return DateTime.SpecifyKind(DateTime.Parse(value, CultureInfo.InvariantCulture), DateTimeKind.Utc);
                case "unspecified":
                    return DateTime.SpecifyKind(DateTime.Parse(value, CultureInfo.InvariantCulture), DateTimeKind.Unspecified);
                case "offset":
                    return DateTimeOffset.Parse(value, CultureInfo.InvariantCulture, styles).LocalDateTime;
            }
            throw new ArgumentException("unknown date kind " + kind);
        }

        static List<JobItemConfiguration> Read(string path)
        {
            // XmlFileJobScheduleManager's constructor.
            using (var fs = File.OpenRead(path))
            {
                return Serializer.Deserialize(fs) as List<JobItemConfiguration>;
            }
        }

        static void Save(string path, List<JobItemConfiguration> list)
        {
            // XmlFileJobScheduleManager.SaveCron().
            using (var fs = File.Create(path))
            {
                Serializer.Serialize(fs, list);
            }
        }

        static int Write(string[] args)
        {
            var list = new List<JobItemConfiguration>();
            bool crlf = false, bom = false, modern = false;
            foreach (var arg in args.Skip(2))
            {
                if (arg == "--crlf") { crlf = true; continue; }
                if (arg == "--bom") { bom = true; continue; }
                if (arg == "--modern") { modern = true; continue; }
                var eq = arg.IndexOf('=');
                var what = arg.Substring(0, eq);
                var value = arg.Substring(eq + 1);
                if (what == "job")
                {
                    var parts = value.Split('|');
                    var job = new JobItemConfiguration() { TypeXml = parts[0] };
                    if (parts.Length > 1)
                    {
                        job.StartType = (JobStartType)Enum.Parse(typeof(JobStartType),
                            new Dictionary<string, string> { { "immediate", "Immediate" }, { "delay", "DelayStart" }, { "schedule", "TimerOnly" }, { "never", "Never" } }[parts[1]]);
                    }
                    list.Add(job);
                }
                else if (what == "add")
                {
                    var s = new JobItemSchedule();
                    foreach (var field in value.Split(';').Where(f => f.Length > 0))
                    {
                        var feq = field.IndexOf('=');
                        var name = field.Substring(0, feq);
                        var text = field.Substring(feq + 1);
                        switch (name)
                        {
                            case "type": s.Type = text == "interval" ? JobScheduleType.Interval : JobScheduleType.Scheduled; break;
                            case "days": s.RepeatOn = text.Split(',').Select(d => (DayOfWeek)Enum.Parse(typeof(DayOfWeek), d)).ToArray(); break;
                            case "start": s.StartDate = ParseDate(text); break;
                            case "stop": s.StopDate = ParseDate(text); s.StopDateSpecified = true; break;
                            case "interval": s.Interval = int.Parse(text, CultureInfo.InvariantCulture); s.IntervalSpecified = true; break;
                            default: throw new ArgumentException("unknown schedule field " + name);
                        }
                    }
                    list.Last().Schedule.Add(s);
                }
                else if (what == "param")
                {
                    var colon = value.IndexOf(':');
                    var kind = value.Substring(0, colon);
                    var text = value.Substring(colon + 1);
                    object item = kind == "int" ? (object)int.Parse(text, CultureInfo.InvariantCulture) : kind == "bool" ? (object)bool.Parse(text) : text;
                    var job = list.Last();
                    job.Parameters = (job.Parameters ?? new object[0]).Concat(new[] { item }).ToArray();
                }
                else throw new ArgumentException("unknown item " + arg);
            }
            if (!crlf && !bom && !modern)
            {
                Save(args[1], list);
                return 0;
            }
            // The same serializer through the writer settings of a Windows / modern .NET host.
            var settings = new XmlWriterSettings
            {
                Indent = true,
                NewLineChars = crlf ? "\r\n" : "\n",
                Encoding = new UTF8Encoding(bom),
                OmitXmlDeclaration = false,
            };
            var ns = new XmlSerializerNamespaces();
            if (modern)
            {
                ns.Add("xsd", "http://www.w3.org/2001/XMLSchema");
                ns.Add("xsi", "http://www.w3.org/2001/XMLSchema-instance");
            }
            else
            {
                ns.Add("xsi", "http://www.w3.org/2001/XMLSchema-instance");
                ns.Add("xsd", "http://www.w3.org/2001/XMLSchema");
            }
            using (var fs = File.Create(args[1]))
            using (var writer = XmlWriter.Create(fs, settings))
            {
                Serializer.Serialize(writer, list, ns);
            }
            return 0;
        }

        static string Date(DateTime value) => value.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff", CultureInfo.InvariantCulture) + "/" + value.Kind;

        static int Dump(string path)
        {
            foreach (var job in Read(path))
            {
                var parameters = job.Parameters == null ? "-" : String.Join(",", job.Parameters.Select(p => p.GetType().Name + ":" + Convert.ToString(p, CultureInfo.InvariantCulture)));
                Console.WriteLine("job type={0} startType={1} parameters={2}", job.TypeXml, job.StartType, parameters);
                foreach (var s in job.Schedule)
                {
                    var days = s.RepeatOn == null ? "-" : String.Join(",", s.RepeatOn);
                    Console.WriteLine("  add type={0} days={1} start={2} stop={3} interval={4}",
                        s.Type, days, Date(s.StartDate), s.StopDateSpecified ? Date(s.StopDate) : "-",
                        s.IntervalSpecified ? s.Interval.ToString(CultureInfo.InvariantCulture) : "-");
                }
            }
            return 0;
        }

        static int Applies(string[] args)
        {
            var wanted = args[2].Split(',')[0].Trim();
            var job = Read(args[1]).FirstOrDefault(j => j.TypeXml != null && j.TypeXml.Split(',')[0].Trim() == wanted);
            if (job == null)
            {
                Console.Error.WriteLine("no entry for " + wanted);
                return 3;
            }
            DateTime? lastRun = null;
            foreach (var text in args.Skip(3))
            {
                var refDate = DateTime.SpecifyKind(DateTime.ParseExact(text, "yyyy-MM-dd'T'HH:mm:ss", CultureInfo.InvariantCulture), DateTimeKind.Local);
                var hit = job.Schedule.Any(s => AppliesTo(s, refDate, lastRun));
                if (hit) lastRun = refDate;
                Console.WriteLine("{0} {1}", text, hit ? 1 : 0);
            }
            return 0;
        }

        public static int Main(string[] args)
        {
            switch (args.Length > 0 ? args[0] : "")
            {
                case "write": return Write(args);
                case "resave": Save(args[2], Read(args[1])); return 0;
                case "dump": return Dump(args[1]);
                case "applies": return Applies(args);
            }
            Console.Error.WriteLine("usage: write|resave|dump|applies (see the source)");
            return 2;
        }
    }
}
