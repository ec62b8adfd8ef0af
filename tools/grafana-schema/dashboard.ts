// The shape a LapVerse dashboard file must have: Grafana's own dashboard schema (@grafana/schema,
// generated from the CUE kinds Grafana validates against), with each panel's options and field
// config typed by its panel plugin's schema.
import type { Dashboard, RowPanel } from "@grafana/schema";
import type * as raw from "@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen";
import type * as bargauge from "@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen";
import type * as gauge from "@grafana/schema/dist/esm/raw/composable/gauge/panelcfg/x/GaugePanelCfg_types.gen";
import type * as piechart from "@grafana/schema/dist/esm/raw/composable/piechart/panelcfg/x/PieChartPanelCfg_types.gen";
import type * as stat from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type * as statetimeline from "@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen";
import type * as table from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type * as text from "@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen";
import type * as timeseries from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

// JSON holds a string enum's values, not the enum: "background" for BigValueColorMode.Background.
type Json<T> = T extends string
  ? `${T}`
  : T extends readonly (infer Item)[]
    ? Json<Item>[]
    : T extends object
      ? { [Key in keyof T]: Json<T[Key]> }
      : T;

// Grafana fills in the options a panel leaves out, so each top-level option is optional; an
// option that is given must be complete and spelled as the plugin's schema says.
type PluginPanel<Type extends string, Options, Custom> = Omit<
  Json<raw.Panel>,
  "type" | "options" | "fieldConfig"
> & {
  type: Type;
  options?: Partial<Json<Options>>;
  fieldConfig?: Omit<Json<raw.FieldConfigSource>, "defaults"> & {
    defaults: Omit<Json<raw.FieldConfig>, "custom"> & { custom?: Partial<Json<Custom>> };
  };
};

type NoCustom = Record<string, never>;

export type TypedPanel =
  | PluginPanel<"bargauge", bargauge.Options, NoCustom>
  | PluginPanel<"gauge", gauge.Options, NoCustom>
  | PluginPanel<"piechart", piechart.Options, piechart.FieldConfig>
  | PluginPanel<"stat", stat.Options, NoCustom>
  | PluginPanel<"state-timeline", statetimeline.Options, statetimeline.FieldConfig>
  | PluginPanel<"table", table.Options, table.FieldConfig>
  | PluginPanel<"text", text.Options, NoCustom>
  | PluginPanel<"timeseries", timeseries.Options, timeseries.FieldConfig>;

export type TypedRow = Omit<Json<RowPanel>, "panels"> & { panels: TypedPanel[] };

export type LapverseDashboard = Omit<Json<Dashboard>, "panels"> & {
  panels?: (TypedPanel | TypedRow)[];
};
